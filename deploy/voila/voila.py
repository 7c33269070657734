# Voila reads this file as well as voila.json (the same --Voila.config_file_paths). The page
# template cannot be chosen in JSON: Voila finds templates on Jupyter's data path only, an
# environment variable, which use_page_template sets for this server process.
from nbops.serve.voila_kernels import use_page_template

use_page_template(c)  # noqa: F821 - `c` is the config traitlets runs this file with

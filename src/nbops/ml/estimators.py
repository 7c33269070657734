"""The models a params file may name, per task: name -> (module, class). Only the named model's
module is imported (the runner checks hyperparameters before any kernel starts; importing all of
them costs it about a second). A table of its own, so the params schema reads it without the
model code. The same name gives the task's variant: `random_forest` is a RandomForestRegressor
under `task: regression`."""

TASKS = ("classification", "regression")

ESTIMATORS = {
    "classification": {
        "decision_tree": ("sklearn.tree", "DecisionTreeClassifier"),
        "random_forest": ("sklearn.ensemble", "RandomForestClassifier"),
        "logistic_regression": ("sklearn.linear_model", "LogisticRegression"),
        "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingClassifier"),
    },
    "regression": {
        "linear_regression": ("sklearn.linear_model", "LinearRegression"),
        "ridge": ("sklearn.linear_model", "Ridge"),
        "decision_tree": ("sklearn.tree", "DecisionTreeRegressor"),
        "random_forest": ("sklearn.ensemble", "RandomForestRegressor"),
        "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingRegressor"),
    },
}

# Every name any task knows, in table order (the params schema's list of model names).
MODEL_NAMES = tuple(dict.fromkeys(name for table in ESTIMATORS.values() for name in table))

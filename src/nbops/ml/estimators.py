"""The models a params file may name: name -> (module, class). Only the named model's module is
imported (the runner checks hyperparameters before any kernel starts; importing all four costs
it about a second). A table of its own, so the params schema reads it without the model code."""

ESTIMATORS = {
    "decision_tree": ("sklearn.tree", "DecisionTreeClassifier"),
    "random_forest": ("sklearn.ensemble", "RandomForestClassifier"),
    "logistic_regression": ("sklearn.linear_model", "LogisticRegression"),
    "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingClassifier"),
}

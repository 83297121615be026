"""One file per learning algorithm over region tasks (the hierarchical Bayes learner so far)."""

"""Models in torch: the L1 two-tower CVR model and the L2 ranker, and how they are trained."""

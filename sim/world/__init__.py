"""The ground-truth marketplace: users, advertisers and ads, traffic, and the true response."""

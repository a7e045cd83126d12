"""Who can answer: rules, the classifier, LLM upstreams, and the simulated upstream."""

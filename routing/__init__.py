"""Who should answer: the escalation ladder and complexity routing."""

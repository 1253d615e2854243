"""Result tables shared by the evaluations (long format: subject, method, region, metric, value)."""

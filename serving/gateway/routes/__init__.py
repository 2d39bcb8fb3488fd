"""One router per task, plus health/metrics and model listing."""

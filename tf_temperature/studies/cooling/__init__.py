"""Cooling: decay eta, grow B, or both, at equal temperature schedules
(`experiment`, `figure`)."""

"""Egress adapters: each speaks one provider's protocol to deliver an allowed message."""

"""`make bench`: modelway against its own floor and LiteLLM, on one mock upstream, measured in one run."""

"""Benchmarks that compare this project's figures against a named peer, one command each."""

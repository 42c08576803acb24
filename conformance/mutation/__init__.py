"""Mutation testing of the conformance suite with mutmut (see conformance/MUTATION.md)."""

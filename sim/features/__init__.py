"""The feature registry and what follows from it: coverage per artifact and the parity audit."""

"""Dataset generation tooling (`python -m datagen.export`); never imported by the runtime library."""

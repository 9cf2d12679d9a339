"""The Starlark front-end: workspace and labels, the builtin surface, loading."""

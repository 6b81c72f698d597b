"""Facts and checks that every layer shares, in one place: torch-free, so the store and the analysis use them too.

- `checks`: the range, integer and choice checks behind every one-line error;
- `cli`: the argument parser whose errors are one line with exit status 2;
- `vocabulary`: the values of the description's choices and the store's columns, and their defaults.
"""

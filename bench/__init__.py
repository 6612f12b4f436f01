"""fastnn's bench suite: fastnn against the tools its users would otherwise pick, on the
same work in the same run. Run `python -m bench --help`."""

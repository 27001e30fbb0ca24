"""chatcli's tests, one folder per package folder; shared support modules at this level."""

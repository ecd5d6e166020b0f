"""Pure values shared by every part: no I/O, standard library only."""

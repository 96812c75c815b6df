"""What the mirror reports to Prometheus: every series, defined once (`series`), and the
text `/metrics` answers with, one coherent set however many worker processes serve
(`exposition`). Nothing here speaks HTTP; the proxy serves it."""

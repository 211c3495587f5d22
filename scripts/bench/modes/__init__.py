"""One module per benchmark mode (registered in ../main.py's MODES; the interface every
mode implements is described there). Each mode owns its slots or scenarios, its verdicts and
its tables; the machinery they share is ../common.py, the alternation of A/B slots
../rounds.py, the parsers and formats ../report.py."""

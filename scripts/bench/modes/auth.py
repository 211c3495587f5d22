NAME = "auth"
FLAG = "--auth"
ARG = None
RUNS = 3
CHART = False

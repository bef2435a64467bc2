"""The pipeline of one study as small steps over a typed study context: select, segment,
measure, RECIST against priors, predict, report."""

"""Research workflows: training, cohort scoring, evaluation runs."""

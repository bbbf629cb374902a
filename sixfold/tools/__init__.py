"""The command-line tools: the sixfold CLI, benchmarks, chaos, fuzzing, dashboards."""

"""Evaluation shared by every method: protocols (which examples, which metrics), the evaluator, the report and the
retrieval grid. A method only declares its protocol, views, codes and optional learned score
(``jsbir.methods.api.EvalSpec``)."""

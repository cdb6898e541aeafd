"""Scale: inputs of any length scored with flat memory, on one machine or on a Ray cluster.

``score_file`` streams a table (or logs) through an investigator and writes scores, p-values and
false-discovery-rate verdicts over the whole input (``anomalens score`` on the command line);
``sample_table`` draws a uniform sample of a table too large to train on whole.
"""

from anomalens.scale.sources import sample_table, table_chunks, table_columns, table_rows
from anomalens.scale.stream import BHStream, ScoreSummary, score_file

__all__ = ["BHStream", "ScoreSummary", "sample_table", "score_file", "table_chunks", "table_columns", "table_rows"]

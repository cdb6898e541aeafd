"""Tools the agent calls: LangChain tools over a ``Toolbox`` (an Investigator and its cases)."""

from anomalens.tools.case_tools import TOOL_NAMES, DetectorCard, make_tool, make_tools
from anomalens.tools.toolbox import LogToolbox, SeriesToolbox, Toolbox

__all__ = ["DetectorCard", "make_tool", "make_tools", "LogToolbox", "SeriesToolbox", "TOOL_NAMES", "Toolbox"]

"""The local stack: `twin stack up|status|down` and `ensure_stack` for code that needs it running."""

from twin.stack.process import StackError
from twin.stack.stack import ComponentStatus, Stack, StartResult, StopResult, ensure_stack

__all__ = ["ComponentStatus", "Stack", "StackError", "StartResult", "StopResult", "ensure_stack"]

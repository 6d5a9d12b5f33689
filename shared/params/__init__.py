"""Parameters: paths and templates, date expressions, resolution, and binding into node code.

Everything here is pure: no I/O, and the clock (cyctime) is passed in.
"""

from shared.params.dates import (
    DateExpressionError,
    evaluate_date_expression,
    expand_date_expressions,
)
from shared.params.paths import MissingPath, lookup, render_template, render_value
from shared.params.resolution import (
    ParameterCycleError,
    ParameterError,
    Placeholder,
    Resolution,
    ResolutionInput,
    Resolver,
    find_placeholders,
    resolve_parameters,
)

__all__ = [
    "DateExpressionError",
    "MissingPath",
    "ParameterCycleError",
    "ParameterError",
    "Placeholder",
    "Resolution",
    "ResolutionInput",
    "Resolver",
    "evaluate_date_expression",
    "expand_date_expressions",
    "find_placeholders",
    "lookup",
    "render_template",
    "render_value",
    "resolve_parameters",
]

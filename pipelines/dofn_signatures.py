"""Beam's DoFn introspection, remembered per function in this process.

Beam reads the parameters of every method of every DoFn (``dir(dofn)``, about 30 methods each:
``process``, ``setup``, ``display_data``, ``with_input_types``, ...) to find state and timer
parameters (``userstate.get_dofn_specs``), and does it again for the same DoFn at each point
that asks: applying the transform, ``to_runner_api``, the runner's translation, the harness's
DoFn invoker. Each time is an ``inspect.signature`` call, ~2,900 of them for the backfill's
first step in a time-sliced worker: 0.09 s of its 0.36-0.42 s from the start of the pipeline
to its first element (measured), in every pipeline of every process. :func:`memoise_signatures`
makes Beam's ``core.get_function_args_defaults`` remember its answer per function: a bound
method's answer depends only on its function (``inspect`` drops the first parameter), so every
DoFn instance of a class, and every later pipeline in the process, reuses it. Functions are
held weakly (a lambda made for one pipeline is forgotten with it); any other callable (a
``functools.partial``, an object with ``__call__``) is inspected every time, as before. What
this assumes: nobody changes a function's parameters or defaults after Beam first read them.
"""

from __future__ import annotations

import types
import weakref

_bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # function -> answer as a method
_plain: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # function -> answer


def memoise_signatures() -> bool:
    """Make Beam's ``get_function_args_defaults`` remember its answer per function; False
    (and nothing changed) where Beam has no such function (another Beam version). Applying it
    twice is applying it once."""
    from apache_beam.transforms import core
    original = getattr(core, "get_function_args_defaults", None)
    if not callable(original):
        return False
    if getattr(original, "memoised", False):
        return True

    def get_function_args_defaults(f):
        if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
            memo, key = _bound, f.__func__
        elif isinstance(f, types.FunctionType):
            memo, key = _plain, f
        else:
            return original(f)
        answer = memo.get(key)
        if answer is None:
            args, defaults = original(f)
            answer = memo[key] = (tuple(args), tuple(defaults))
        return list(answer[0]), list(answer[1])     # Beam's own lists: the caller's to change

    get_function_args_defaults.__doc__ = original.__doc__
    get_function_args_defaults.memoised = True
    get_function_args_defaults.original = original
    core.get_function_args_defaults = get_function_args_defaults
    return True

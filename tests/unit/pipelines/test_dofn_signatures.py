"""Beam's DoFn introspection is remembered per function (pipelines/dofn_signatures.py): the
same answers as Beam's own, asked once per function, and stateful DoFns still found."""

from __future__ import annotations

import functools
import gc
import inspect
import weakref

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate

import mmalign.pipelines.core  # noqa: F401 -- the jobs' import applies it
from mmalign.pipelines import dofn_signatures
from mmalign.pipelines.runners import pipeline


class Counting(beam.DoFn):
    STATE = userstate.ReadModifyWriteStateSpec("n", VarIntCoder())

    def process(self, element, n=beam.DoFn.StateParam(STATE), ts=beam.DoFn.TimestampParam):
        seen = (n.read() or 0) + 1
        n.write(seen)
        yield element[0], seen


class Plain(beam.DoFn):
    def process(self, element, scale=2):
        yield element * scale


def _counted(monkeypatch):
    calls = []
    real = inspect.signature

    def signature(f, *a, **k):
        calls.append(f)
        return real(f, *a, **k)
    monkeypatch.setattr(inspect, "signature", signature)
    return calls


def test_the_jobs_import_applies_it_once():
    f = core.get_function_args_defaults
    assert f.memoised is True
    assert dofn_signatures.memoise_signatures() is True
    assert core.get_function_args_defaults is f          # not wrapped twice


def test_answers_are_beams_own():
    original = core.get_function_args_defaults.original
    fns = [Counting().process, Plain().process, Plain.process, lambda a, b=3, *c, d=4: a,
           functools.partial(lambda a, b: a, 1), len, Counting().setup]
    for f in fns:
        assert core.get_function_args_defaults(f) == original(f), f


def test_a_function_is_inspected_once_for_all_its_instances(monkeypatch):
    class Fresh(beam.DoFn):                     # a class no other test has inspected
        def process(self, element, k=beam.DoFn.KeyParam):
            yield element
    calls = _counted(monkeypatch)
    first = core.get_function_args_defaults(Fresh().process)
    again = [core.get_function_args_defaults(Fresh().process) for _ in range(5)]
    assert first == (["element", "k"], [beam.DoFn.KeyParam]) and all(a == first for a in again)
    assert len(calls) == 1
    # a partial is not a function: inspected every time
    part = functools.partial(lambda a, b: a, 1)
    core.get_function_args_defaults(part)
    core.get_function_args_defaults(part)
    assert len(calls) == 3


def test_the_callers_lists_are_its_own():
    args, defaults = core.get_function_args_defaults(Plain().process)
    args.append("x")
    defaults.clear()
    assert core.get_function_args_defaults(Plain().process) == (["element", "scale"], [2])


def test_a_lambda_is_forgotten_with_its_pipeline():
    f = lambda element, k=1: element           # noqa: E731
    core.get_function_args_defaults(f)
    assert f in dofn_signatures._plain
    gone = weakref.ref(f)
    del f
    gc.collect()
    assert gone() is None                      # the memo does not keep it alive


def test_state_and_defaults_still_reach_the_dofns():
    assert userstate.is_stateful_dofn(Counting()) and not userstate.is_stateful_dofn(Plain())
    with pipeline("DirectRunner", PipelineOptions()) as p:
        counted = (p | "Keys" >> beam.Create([("a", 1), ("a", 2), ("b", 3)])
                   | beam.ParDo(Counting()))
        scaled = p | "Nums" >> beam.Create([1, 2]) | beam.ParDo(Plain())
        assert_that(counted, equal_to([("a", 1), ("a", 2), ("b", 1)]), label="state")
        assert_that(scaled, equal_to([2, 4]), label="defaults")


def test_another_beam_is_left_alone(monkeypatch):
    monkeypatch.delattr(core, "get_function_args_defaults")
    assert dofn_signatures.memoise_signatures() is False
    assert not hasattr(core, "get_function_args_defaults")

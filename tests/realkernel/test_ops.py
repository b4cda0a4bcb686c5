"""The op list: its guest encoding, parameters, and agreement with the C interpreter."""

from __future__ import annotations

import re
import typing
from dataclasses import fields

import pytest

from pinlab.realkernel import ops
from pinlab.realkernel.catalog import PROBES, Search, by_name, encode_cases
from pinlab.realkernel.toolchain import probe_sources

OP_TYPES = typing.get_args(ops.Op)


def test_every_op_type_encodes_and_the_interpreter_knows_its_name() -> None:
    source = probe_sources()["ops.c"]
    handled = set(re.findall(r'!strcmp\(t, "([a-z_]+)"\)', source))
    encoded = set()
    for cls in OP_TYPES:
        if cls is ops.Fork:
            continue
        args = {f.name: ("r" if f.type in ("str",) else 1) for f in fields(cls)}
        encoded.add(ops.encode_ops((cls(**args),))[0].split()[0])
    case_file_keywords = {"case", "search", "end"}
    assert encoded | {"fork"} == handled - case_file_keywords


def test_encoding_is_name_then_fields_in_order() -> None:
    lines = ops.encode_ops(
        (
            ops.Map("b", "anon", 4096, "shared", "adjacent"),
            ops.Fork((ops.PagemapCmp("child", "b"), ops.Fork(()))),
            ops.Vmsplice("b", 0, ops.Param("N")),
        )
    )
    assert lines == [
        "map b anon 4096 shared adjacent",
        "fork",
        "pagemap_cmp child b",
        "fork",
        "endfork",
        "endfork",
        "vmsplice b 0 $N",
    ]


def test_tokens_with_spaces_are_refused() -> None:
    with pytest.raises(ValueError):
        ops.encode_ops((ops.PinsEnd("two words"),))


def test_bind_replaces_the_parameter_inside_forks() -> None:
    bound = ops.bind((ops.Fork((ops.Vmsplice("b", 0, ops.Param("N")),)),), "N", 7)
    assert bound == (ops.Fork((ops.Vmsplice("b", 0, 7),)),)
    assert "$" not in "".join(ops.encode_ops(bound))


def test_catalog_is_well_formed() -> None:
    assert len({p.name for p in PROBES}) == len(PROBES)
    for p in PROBES:
        regions: set[str] = set()
        observed: list[str] = []
        _walk(p.ops, regions, observed)
        assert len(observed) == len(set(observed)), p.name
        if p.search is not None:
            assert p.search.obs in observed
            assert "$" + p.search.param in encode_cases((p,))


def _walk(op_list: tuple[ops.Op, ...], regions: set[str], observed: list[str]) -> None:
    for op in op_list:
        if isinstance(op, ops.Fork):
            _walk(op.ops, set(regions), observed)
            continue
        if isinstance(op, ops.Map):
            regions.add(op.region)
        for f in fields(op):
            if f.name in ("region", "src", "dst"):
                assert getattr(op, f.name) in regions, op
        if hasattr(op, "obs"):
            observed.append(op.obs)


def test_case_file_format() -> None:
    probe = by_name("fuzzy-threshold")
    assert probe.search == Search("N", 0, 4096, "child", "d1", "s1")
    text = encode_cases((probe,))
    assert text.startswith("case fuzzy-threshold\nsearch N 0 4096 child d1 s1\n")
    assert text.endswith("end\n")

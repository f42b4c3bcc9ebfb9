"""RunSpec validation and --opt parsing."""

import pytest

from genprof.errors import GenprofError
from genprof.spec import OptSpec, RunSpec


def test_opt_parsing_forms():
    assert OptSpec.parse("prepack") == OptSpec("prepack")
    assert OptSpec.parse("sarathi:chunk=256,batch=8").as_dict() == {"chunk": "256", "batch": "8"}
    assert OptSpec.parse("attn=flash").label == "attn=flash"
    assert OptSpec.parse("sarathi:chunk=256,batch=8").label == "sarathi:chunk=256,batch=8"


@pytest.mark.parametrize("bad", ["", "x:chunk", "x:=3"])
def test_malformed_opt_is_refused(bad):
    with pytest.raises(GenprofError):
        OptSpec.parse(bad)


@pytest.mark.parametrize("field,value,msg", [
    ("size", "huge", "valid: tiny, small, paper"), ("mode", "x", "timing, trace"),
    ("batch", 0, "batch must be"), ("repeats", 0, "repeats must be"), ("device", "tpu", "cpu, cuda"),
])
def test_invalid_spec_fields_name_the_valid_ones(field, value, msg):
    with pytest.raises(GenprofError, match=msg):
        RunSpec("llm", **{field: value})


def test_spec_round_trips_through_a_dict():
    s = RunSpec("llm", size="small", optimizations=(OptSpec.parse("a:b=c"),))
    assert RunSpec.from_dict(s.to_dict()) == s

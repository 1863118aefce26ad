"""Serializers: the encoding travels in the flags; unknown flags stay bytes."""

import pickle

import pytest

from starlingpy.client import (
    FLAG_JSON,
    FLAG_PICKLE,
    FLAG_RAW,
    FLAG_TEXT,
    JSONSerializer,
    PickleSerializer,
    RawSerializer,
)


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True]}, [], "text é", 0, -7, None])
def test_json_round_trip(value):
    data, flags = JSONSerializer().dumps(value)
    assert flags == FLAG_JSON
    assert JSONSerializer().loads(data, flags) == value


@pytest.mark.parametrize("value", [b"", b"\x00\xffbinary", bytearray(b"ba"), memoryview(b"mv")])
def test_bytes_pass_through_untouched(value):
    for serializer in (JSONSerializer(), PickleSerializer(), RawSerializer()):
        data, flags = serializer.dumps(value)
        assert (data, flags) == (bytes(value), FLAG_RAW)
        assert serializer.loads(data, flags) == bytes(value)


def test_unknown_flags_come_back_as_bytes():
    for serializer in (JSONSerializer(), PickleSerializer(), RawSerializer()):
        assert serializer.loads(b'{"a":1}', 0x4000) == b'{"a":1}'
        assert serializer.loads(b"\x80\x04K\x01.", 2) == b"\x80\x04K\x01."


def test_pickle_only_when_chosen():
    data = pickle.dumps({1, 2})
    assert JSONSerializer().loads(data, FLAG_PICKLE) == data  # never unpickled by default
    assert RawSerializer().loads(data, FLAG_PICKLE) == data
    assert PickleSerializer().loads(data, FLAG_PICKLE) == {1, 2}


def test_pickle_serializer_pickles_objects_and_reads_json():
    data, flags = PickleSerializer().dumps({3, 4})
    assert flags == FLAG_PICKLE and pickle.loads(data) == {3, 4}
    assert PickleSerializer().loads(b"[1]", FLAG_JSON) == [1]


def test_text_flag_is_utf8():
    assert JSONSerializer().loads("é".encode(), FLAG_TEXT) == "é"


def test_damaged_data_is_returned_not_lost():
    assert JSONSerializer().loads(b"{not json", FLAG_JSON) == b"{not json"
    assert JSONSerializer().loads(b"\xff\xfe", FLAG_TEXT) == b"\xff\xfe"
    assert PickleSerializer().loads(b"not a pickle", FLAG_PICKLE) == b"not a pickle"


def test_raw_serializer_refuses_objects():
    with pytest.raises(TypeError):
        RawSerializer().dumps({"a": 1})
    assert RawSerializer().loads(b"[1]", FLAG_JSON) == b"[1]"


def test_json_refuses_what_it_cannot_encode():
    with pytest.raises(TypeError):
        JSONSerializer().dumps({1, 2})
    with pytest.raises(ValueError):
        JSONSerializer().dumps(float("nan"))

"""The model's records: fields written once, built by keyword, never changed."""

import copy
import pickle

import pytest

from lifecycle_probe.records import ImportRecord, LifecycleEvent, Record


def an_import(**changes):
    fields = {
        "module": "pkg.mod",
        "start_ns": 10,
        "end_ns": 50,
        "self_ns": 30,
        "import_id": 2,
        "parent_id": 1,
        "origin": "function",
        "during_init": True,
    }
    return ImportRecord(**{**fields, **changes})


def test_the_fields_are_the_annotations_in_order_with_their_defaults():
    assert ImportRecord._fields == (
        "module",
        "start_ns",
        "end_ns",
        "self_ns",
        "import_id",
        "parent_id",
        "origin",
        "during_init",
        "error_type",
    )
    record = an_import()
    assert record.error_type is None  # the default
    assert (record.module, record.self_s, record.duration_s) == ("pkg.mod", 3e-8, 4e-8)
    assert record.as_dict()["origin"] == "function"


def test_keyword_and_order_build_the_same_record_and_wrong_names_are_refused():
    by_order = ImportRecord("pkg.mod", 10, 50, 30, 2, 1, "function", True)
    assert by_order == an_import()
    with pytest.raises(TypeError):
        an_import(modul="typo")
    with pytest.raises(TypeError):
        ImportRecord(module="only")  # type: ignore[call-arg]  # the others are required
    with pytest.raises(TypeError):
        an_import().replace(modul="typo")


def test_a_record_is_never_changed_and_a_copy_says_so():
    record = an_import()
    with pytest.raises(AttributeError, match=r"ImportRecord\.module: records are immutable"):
        record.module = "other"
    with pytest.raises(AttributeError, match=r"ImportRecord\.origin: records are immutable"):
        del record.origin
    with pytest.raises(AttributeError):
        record.extra = 1
    changed = record.replace(module="other")
    assert (changed.module, record.module) == ("other", "pkg.mod")
    assert changed != record


def test_equality_and_hash_are_by_type_and_values_never_by_position():
    assert an_import() == an_import()
    assert hash(an_import()) == hash(an_import())
    assert an_import() != an_import(import_id=3)
    assert an_import() != tuple(an_import().as_dict().values())
    assert LifecycleEvent(name="x", time_ns=1) != an_import()
    assert len({an_import(), an_import(), an_import(import_id=3)}) == 2


def test_pickle_and_copy_rebuild_the_record():
    record = LifecycleEvent(name="lifecycle.global.leak", time_ns=5, attributes=(("a", 1),))
    assert pickle.loads(pickle.dumps(record)) == record
    assert copy.copy(record) == record
    assert copy.deepcopy(record) == record
    assert repr(record) == (
        "LifecycleEvent(name='lifecycle.global.leak', time_ns=5, attributes=(('a', 1),))"
    )


def test_a_record_made_by_extending_another_has_both_sets_of_fields():
    class Tagged(LifecycleEvent):
        tag: str = "none"

    # built and compared after its base's constructor and values getter were made: it
    # must inherit neither (they know only the base's fields)
    first = LifecycleEvent(name="first", time_ns=0)
    assert first == LifecycleEvent(name="first", time_ns=0)
    tagged = Tagged(name="n", time_ns=1, tag="t")
    assert Tagged._fields == ("name", "time_ns", "attributes", "tag")
    assert (tagged.name, tagged.attributes, tagged.tag) == ("n", (), "t")
    assert isinstance(tagged, Record)
    assert tagged != Tagged(name="n", time_ns=1, tag="other")
    assert tagged.as_dict() == {"name": "n", "time_ns": 1, "attributes": (), "tag": "t"}
    assert copy.copy(tagged) == tagged  # through __reduce__, as pickle goes


def test_a_record_of_one_field_compares_and_copies_by_that_field():
    class Named(Record):
        name: str

    assert Named(name="a") == Named("a")
    assert Named(name="a") != Named(name="b")
    assert Named(name="a").as_dict() == {"name": "a"}
    assert hash(Named(name="a")) == hash(Named(name="a"))


def test_a_record_extends_exactly_one_record():
    class Mixin:
        __slots__ = ()

    with pytest.raises(TypeError, match="a record extends exactly one record"):

        class Mixed(Mixin, LifecycleEvent):
            extra: int = 0


def test_no_record_of_the_probe_declares_a_class_attribute_at_run_time():
    # Every run-time annotation of a record is a field (the metaclass reads no types): a
    # ClassVar must be declared for the type checker only, under TYPE_CHECKING.
    import lifecycle_probe.config
    import lifecycle_probe.rare_records
    import lifecycle_probe.records

    records = {
        value
        for module in (
            lifecycle_probe.records,
            lifecycle_probe.rare_records,
            lifecycle_probe.config,
        )
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Record)
    }
    assert len(records) >= 12
    for record in records:
        for name, kind in vars(record).get("__annotations__", {}).items():
            assert "ClassVar" not in str(kind), f"{record.__name__}.{name}"

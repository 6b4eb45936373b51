"""vmkit.record, the spec layer's validation: every bad field reported at once with its
location, assignment and `replace` validated like input, and the JSON schema that
`vmkit spec schema` prints checked by jsonschema against real specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from vmkit.errors import SpecError
from vmkit.spec import MachineSpec, spec_from_dict

VALID: list[dict[str, Any]] = [
    {"name": "a"},
    {
        "name": "b",
        "cpus": "2",
        "memory": "512M",
        "max_cpus": 4,
        "topology": {"cores_per_die": 2, "packages": 2},
        "boot": {"kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0"},
        "disks": [{"path": "/d.img", "readonly": True, "iops": 100, "bandwidth": "50M"}],
        "networks": ["nat", {"mode": "user", "publish": ["8080:80"], "mac": "52:54:00:AA:bb:01"}],
        "shares": [{"host": "/srv", "tag": "srv"}],
        "cloud_init": {"user": "dev", "runcmd": ["true", ["echo", "x"]], "user_data": {"a": 1}},
        "readiness": {"timeout": 30},
        "arch": "amd64",
    },
    {"name": "c", "boot": {"kind": "efi"}, "disks": [{"size": "1G"}], "networks": "none"},
    {"name": "d", "driver": "tart", "boot": {"kind": "tart", "disk_size": "50G"}},
]


def _schema() -> dict[str, Any]:
    schema = MachineSpec.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.mark.parametrize("data", VALID, ids=lambda d: d["name"])
def test_stored_specs_validate_against_the_printed_schema(data: dict[str, Any]) -> None:
    spec = spec_from_dict(data, check_files=False)
    stored = json.loads(json.dumps(spec.to_json()))
    jsonschema.validate(stored, _schema())
    assert spec_from_dict(stored, check_files=False) == spec


def test_the_schema_refuses_what_validation_refuses() -> None:
    schema = _schema()
    good = spec_from_dict({"name": "a"}, check_files=False).to_json()
    for bad in ({**good, "cpu": 1}, {**good, "accelerator": "xen"}, {**good, "rng": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_bad_field_is_reported_at_once_with_its_location() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict(
            {
                "name": "x",
                "cpus": 0,
                "memory": "1K",
                "disks": [{"path": "/d"}, {"size": 7, "sise": 1}],
                "networks": [{"mode": "user", "mac": "zz"}],
                "boot": {"kind": "nope"},
                "rng": "maybe",
                "extra": 1,
            },
            check_files=False,
        )
    fields = [field for field, _ in caught.value.problems]
    assert fields == [
        "extra",
        "cpus",
        "memory",
        "boot",
        "disks[1].sise",
        "disks[1].size",
        "networks[0].mac",
        "rng",
    ]
    messages = dict(caught.value.problems)
    assert "unknown field" in messages["extra"]
    assert "'nope' is not a boot kind" in messages["boot"]
    assert "512-byte sectors" in messages["disks[1].size"]
    assert "not true or false" in messages["rng"]


def test_a_rule_across_fields_names_the_record() -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_dict({"name": "x", "disks": [{"size": "1G", "clone": "/c"}]}, check_files=False)
    assert caught.value.problems == [
        ("disks[0]", "give `size` (a new empty disk) or `clone` (a copy), not both")
    ]


def test_assignment_breaking_a_rule_is_refused_and_undone() -> None:
    spec = spec_from_dict({"name": "x", "cpus": 4}, check_files=False)
    with pytest.raises(SpecError, match="max_cpus"):
        spec.max_cpus = 2
    assert spec.max_cpus is None
    with pytest.raises(AttributeError):
        spec.cpu = 3  # type: ignore[attr-defined]


def test_replace_validates_and_leaves_the_original() -> None:
    spec = spec_from_dict({"name": "x"}, check_files=False)
    with pytest.raises(SpecError, match="cpus"):
        spec.replace(cpus=0)
    bigger = spec.replace(cpus="3", serial_log="rel.log")
    assert (bigger.cpus, spec.cpus) == (3, 1)
    assert bigger.serial_log == Path("rel.log").absolute()


def test_records_compare_by_value_and_are_unhashable() -> None:
    one = spec_from_dict({"name": "x"}, check_files=False)
    assert one == spec_from_dict({"name": "x"}, check_files=False)
    assert one != spec_from_dict({"name": "y"}, check_files=False)
    with pytest.raises(TypeError):
        hash(one)


def test_a_yaml_date_in_user_data_is_kept_as_its_iso_text() -> None:
    """YAML reads `2024-01-02` as a datetime.date: accepted as plain data, written as text
    (record.is_date, which does not import datetime itself)."""
    import yaml

    from vmkit.spec import spec_from_dict

    data = yaml.safe_load("name: a\ncloud_init:\n  user_data:\n    when: 2024-01-02\n")
    spec = spec_from_dict(data)
    assert spec.to_json()["cloud_init"]["user_data"] == {"when": "2024-01-02"}

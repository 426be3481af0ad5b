"""Drift detection and field ownership, the two reads behind drift repair and the HPA handover."""

from __future__ import annotations

from llmservice.operator.drift import drifted, owns_field


def test_fields_added_by_the_server_are_not_drift() -> None:
    desired = {"spec": {"ports": [{"port": 8000, "name": "http"}]}}
    actual = {
        "spec": {
            "ports": [{"port": 8000, "name": "http", "protocol": "TCP"}],
            "clusterIP": "10.0.0.1",
        }
    }
    assert not drifted(desired, actual)


def test_a_changed_or_missing_field_is_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"image": "a:1"}}}
    assert drifted(desired, {"spec": {"replicas": 2, "template": {"image": "b:1"}}})
    assert drifted(desired, {"spec": {"template": {"image": "a:1"}}})
    assert drifted({"args": ["a", "b"]}, {"args": ["a"]})


def test_quantities_compare_as_text() -> None:
    assert not drifted({"limits": {"nvidia.com/gpu": 4}}, {"limits": {"nvidia.com/gpu": "4"}})


def test_owns_field_reads_managed_fields() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:replicas": {}}},
                },
                {"manager": "op", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
            ]
        }
    }
    assert not owns_field(obj, "op", "spec", "replicas")
    assert owns_field(obj, "op", "spec", "template")
    assert not owns_field(obj, "kube-controller-manager", "spec", "replicas"), (
        "an Update is not an apply"
    )

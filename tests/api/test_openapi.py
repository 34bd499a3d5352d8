"""The OpenAPI schema lists every HTTP route of the contract with typed bodies (the WebSocket
route cannot be described by OpenAPI 3; it is tested over the real stack)."""

from __future__ import annotations

from ingress.app import create_app

CONTRACT_ROUTES = {
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{session_id}"),
    ("delete", "/api/v1/sessions/{session_id}"),
    ("post", "/api/v1/sessions/{session_id}/reset"),
    ("get", "/api/v1/sessions/{session_id}/frames/{frame_index}"),
    ("post", "/api/v1/sessions/{session_id}/prompts"),
    ("get", "/api/v1/sessions/{session_id}/objects"),
    ("patch", "/api/v1/sessions/{session_id}/objects/{obj_id}"),
    ("delete", "/api/v1/sessions/{session_id}/objects/{obj_id}"),
    ("get", "/api/v1/sessions/{session_id}/objects/{obj_id}/timeline"),
    ("delete", "/api/v1/sessions/{session_id}/frames/{frame_index}/prompts"),
    ("post", "/api/v1/sessions/{session_id}/propagate"),
    ("post", "/api/v1/sessions/{session_id}/propagate/cancel"),
    ("get", "/api/v1/sessions/{session_id}/masks"),
    ("get", "/api/v1/sessions/{session_id}/export"),
    ("get", "/api/v1/sessions/{session_id}/review"),
    ("get", "/api/v1/sessions/{session_id}/frames/{frame_index}/overlay"),
    ("post", "/track"),
    ("post", "/api/v1/image/segment"),
    ("get", "/health"),
    ("get", "/api/v1/models"),
}


def schema() -> dict:
    return create_app().openapi()


def test_every_contract_route_is_in_the_schema():
    paths = schema()["paths"]
    listed = {(method, path) for path, item in paths.items() for method in item}
    assert listed == CONTRACT_ROUTES


def test_session_creation_takes_multipart_or_json():
    body = schema()["paths"]["/api/v1/sessions"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "file" in body["multipart/form-data"]["schema"]["required"]


def test_errors_are_documented_with_the_contract_body():
    spec = schema()
    prompts = spec["paths"]["/api/v1/sessions/{session_id}/prompts"]["post"]["responses"]
    assert {"404", "422", "503"} <= set(prompts)
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")


def test_propagation_documents_the_ndjson_stream():
    responses = schema()["paths"]["/api/v1/sessions/{session_id}/propagate"]["post"]["responses"]
    assert "application/x-ndjson" in responses["200"]["content"]
    assert "409" in responses


def test_a_session_reports_its_background_preparation():
    schemas = schema()["components"]["schemas"]
    preparation = schemas["Session"]["properties"]["preparation"]
    assert {"$ref": "#/components/schemas/Preparation"} in preparation["anyOf"]
    assert set(schemas["Preparation"]["required"]) == {"stage", "done_frames", "total_frames"}


def test_prompts_take_points_or_a_text_and_answer_each_its_result():
    spec = schema()
    route = spec["paths"]["/api/v1/sessions/{session_id}/prompts"]["post"]
    body = route["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert body == [
        {"$ref": "#/components/schemas/Prompt"},
        {"$ref": "#/components/schemas/TextPromptRequest"},
    ]
    answer = route["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/TextPromptResult"} in answer
    assert "409" in route["responses"]  # detector_unavailable
    schemas = spec["components"]["schemas"]
    assert {"frame_index", "text"} <= set(schemas["TextPromptRequest"]["required"])
    assert {"exemplar_boxes", "exemplar_labels", "normalized"} <= set(
        schemas["TextPromptRequest"]["properties"]
    )
    concept = schemas["ConceptObject"]["properties"]
    assert {"obj_id", "name", "category", "detector_score", "matched"} <= set(concept)


def test_propagation_takes_redetect_and_images_a_text():
    spec = schema()
    schemas = spec["components"]["schemas"]
    redetect = schemas["PropagationRequest"]["properties"]["redetect"]
    assert {"$ref": "#/components/schemas/Redetect"} in redetect["anyOf"]
    image = spec["paths"]["/api/v1/image/segment"]["post"]["requestBody"]["content"]
    assert "text" in image["application/json"]["schema"]["properties"]
    assert "text" in image["multipart/form-data"]["schema"]["properties"]
    instances = schemas["ImageSegmentation"]["properties"]["instances"]
    assert instances["items"] == {"$ref": "#/components/schemas/DetectedInstance"}

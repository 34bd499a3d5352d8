"""Names of the SAM 2 replica's methods that the ingress's session router treats specially."""

CREATE_METHOD = "create_session"
# Calls that take a session slot on whichever replica has the most free ones.
PLACEMENT_METHODS = frozenset({CREATE_METHOD, "restore_session", "segment_image", "track"})

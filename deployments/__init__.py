"""sam2-serve deployments: the SAM 2 session engine (``deployments.engine``, no Ray) and,
on top of it, the Ray Serve replica."""

"""sam2-serve deployments: the SAM 2 session engine (``deployments.engine``, no Ray), on top
of it the Ray Serve replica, the torch-free contract the ingress imports
(``deployments.protocol``), and ``deployments.app``, the builder that composes the ingress and
the replicas into the Serve application."""

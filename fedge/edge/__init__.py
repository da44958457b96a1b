"""The device agent: enrolment, the task loop over the fleet protocol, local data loaders."""

"""Lifecycle (managed) nodes for the model-holding nodes: reward_model and the policy.

configure loads the models and creates the topics; activate starts processing (callbacks
publish only while active); deactivate stops it; cleanup frees the models and the topics;
`ros2 lifecycle set /env0/policy deactivate` works as on any managed node. With the
`autostart` parameter (default true: the pip-only runner has no lifecycle manager) the node
configures and activates itself at start-up; a failing configure then ends the process with
the reason (exit code 2), as an unmanaged node would.
"""
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rcl_interfaces.msg import ParameterDescriptor

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedNode(LifecycleNode):
    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.active = False
        self.configured = False
        self._entities = []
        self._configure_error = ""
        self.autostart = bool(self.declare_parameter(
            "autostart", True, ParameterDescriptor(description=(
                "configure and activate at start-up (false: wait for a lifecycle manager or "
                "`ros2 lifecycle set`)"))).value)

    # subclasses implement these two
    def configure_node(self) -> None:
        """Load models, create publishers/subscriptions (register them with track())."""

    def cleanup_node(self) -> None:
        """Free what configure_node made (tracked entities are destroyed afterwards)."""

    def track(self, entity):
        self._entities.append(entity)
        return entity

    def start(self) -> None:
        """Call at the end of __init__."""
        if not self.autostart:
            self.get_logger().info("waiting to be configured (autostart is false)")
            return
        self.trigger_configure()
        if not self.configured:
            raise RuntimeError(self._configure_error or "configure failed")
        self.trigger_activate()

    # lifecycle callbacks
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.configure_node()
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
            self._configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self._destroy_entities()
            return FAILURE
        self.configured = True
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active = False
        self.get_logger().info("inactive: not processing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("cleaned up: models freed")
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        return SUCCESS

    def _cleanup(self) -> None:
        self.active = False
        if self.configured:
            self.cleanup_node()
        self.configured = False
        self._destroy_entities()

    def _destroy_entities(self) -> None:
        for e in self._entities:
            for destroy in (self.destroy_subscription, self.destroy_publisher, self.destroy_timer,
                            self.destroy_service):
                try:
                    if destroy(e):
                        break
                except (TypeError, AttributeError):
                    continue
        self._entities = []

    @property
    def lifecycle_state(self) -> str:
        return "active" if self.active else "inactive" if self.configured else "unconfigured"

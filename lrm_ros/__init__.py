"""lrm_ros: Large Reward Models (vision-language reward generators) on ROS 2."""
# The generated message package (lrm_ros.msg and its type-support libraries) is installed
# into site-packages by the build; let a source checkout on sys.path find it there too.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"

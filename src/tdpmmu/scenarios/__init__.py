"""Layer ``scenarios``: named concurrent programs and the defects that break them."""

from .registry import (DEFECTS, SCENARIOS, Defect, Scenario, all_defects, all_scenarios,  # noqa: F401
                       default_scenarios, get_defect, get_scenario, register_defect, scenario)

package supervise

import "time"

// Health and hang detection (SPEC §10).

func (sv *service) startHealth(inst *instance, now time.Time) {}
func (sv *service) stopHealth(inst *instance)                 {}
func (sv *service) healthEvent(ev event, now time.Time)       {}
func (sv *service) healthTick(now time.Time)                  {}
func (sv *service) healthDeadline() time.Time                 { return time.Time{} }
func (sv *service) healthStatus(st *Status)                   {}

package supervise

import "time"

// notifier is a service's NOTIFY_SOCKET (ready=notify).
type notifier struct {
	name string
}

func (n *notifier) addr() string { return "@" + n.name }

func (sv *service) openNotify() error        { return nil }
func (sv *service) readNotify(now time.Time) {}
func (sv *service) closeNotify()             {}

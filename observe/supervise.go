package observe

import (
	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
	"github.com/prometheus/client_golang/prometheus"
)

// Supervision metrics: handler failures by reason, restarts, and partitions failing.

type supMetrics struct {
	failures *prometheus.CounterVec
	restarts *prometheus.CounterVec
}

var descFailing = prometheus.NewDesc("helix_partitions_failing",
	"Partitions whose handler is not running because it failed: scope=node counts this node's (restarting or being given back); "+
		"scope=cluster, on the coordinator, those given back by every eligible worker and held until a cool-down ends.",
	[]string{"node", "scope"}, nil)

func newSupMetrics(reg prometheus.Registerer, m *Metrics) *supMetrics {
	s := &supMetrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_handler_failures_total",
			Help: "Partition handlers that failed (returned before being stopped, or panicked), by reason: error, returned, panic.",
		}, []string{"node", "reason"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "helix_handler_restarts_total",
			Help: "Partition handlers restarted after a failure (same generation, after a backoff).",
		}, []string{"node"}),
	}
	reg.MustRegister(s.failures, s.restarts, (*failingGauge)(m))
	return s
}

var _ helix.SupervisionObserver = (*Metrics)(nil)

// HandlerFailed implements helix.SupervisionObserver.
func (m *Metrics) HandlerFailed(node string, p helix.Partition, reason string) {
	m.sup.failures.WithLabelValues(node, reason).Inc()
}

func (s *supMetrics) event(node string, e engine.Event) {
	if e.Kind == "partition_restarted" {
		s.restarts.WithLabelValues(node).Inc()
	}
}

type failingGauge Metrics

func (g *failingGauge) Describe(ch chan<- *prometheus.Desc) { ch <- descFailing }

func (g *failingGauge) Collect(ch chan<- prometheus.Metric) {
	for _, n := range (*gauges)(g).watched() {
		s := n.Status()
		ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, float64(helix.Failing(s.NodeState)), n.ID(), "node")
		if s.Coordinator {
			ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, float64(len(s.Failing)), n.ID(), "cluster")
		}
	}
}

// partitionViews: a node's partitions with their supervision state, and the
// partitions it holds as coordinator because they fail everywhere.
func partitionViews(s helix.Status) ([]helix.PartitionState, []string) {
	failing := []string{}
	for _, p := range s.Failing {
		failing = append(failing, p.String())
	}
	return helix.PartitionStates(s.NodeState), failing
}

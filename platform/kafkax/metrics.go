package kafkax

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// The consumer group metrics of every Group, labelled by the group id (a
// query-svc or projector group id names its snapshot generation).
var (
	groupRebalances = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "profiles_group_rebalances_total",
		Help: "Sessions of the consumer group this instance started (each follows a rebalance, or the first join), by group.",
	}, []string{"group"})
	groupOwned = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_group_partitions_owned",
		Help: "Partitions of the group's primary topic this instance owns now (0 between sessions), by group.",
	}, []string{"group"})
	groupLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_group_consumer_lag_records",
		Help: "Offsets between the partition's high watermark and the next record this instance will handle, per owned partition (transaction markers count, so an idle transactional partition may show 1).",
	}, []string{"group", "topic", "partition"})
	groupLeaves = promauto.NewCounter(prometheus.CounterOpts{
		Name: "profiles_group_leaves_total",
		Help: "Times this instance left a consumer group (at a drain, or to step aside), handing its partitions over.",
	})
	groupAside = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_group_stepped_aside",
		Help: "1 while this instance is out of the group because it cannot apply records (GroupOptions.Unfit: a full disk), by group.",
	}, []string{"group"})
	groupUnowned = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "profiles_group_partitions_unowned",
		Help: "Partitions of the group's primary topic that no member owns in the latest table this instance read (a stable group should have none), by group.",
	}, []string{"group"})
)

func (g *Group) setLag(topic string, p int32, lag int64) {
	groupLag.WithLabelValues(g.opts.Group, topic, strconv.Itoa(int(p))).Set(float64(max(lag, 0)))
}

func (g *Group) dropLag(topic string, p int32) {
	groupLag.DeleteLabelValues(g.opts.Group, topic, strconv.Itoa(int(p)))
}

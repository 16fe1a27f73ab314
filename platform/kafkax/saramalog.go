package kafkax

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/IBM/sarama"
)

// LogSarama sends sarama's own log lines (joins, rebalances, retries,
// metadata refreshes: what it does between the calls this package makes)
// to log at debug level, with component=sarama, when log has debug
// enabled; otherwise it does nothing. sarama's logger is global: the last
// call wins. It is meant for a process's start, before any client exists.
func LogSarama(log *slog.Logger) {
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	sarama.Logger = saramaLog{log.With("component", "sarama")}
}

// saramaLog is sarama.StdLogger over slog, at debug level.
type saramaLog struct{ log *slog.Logger }

func (l saramaLog) Print(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (l saramaLog) Printf(format string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (l saramaLog) Println(v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintln(v...))) }

package kafkax

import "time"

// Gather is the group commit of a transactional writer: it adds to batch,
// which holds n records, the requests that arrive on reqs within linger
// (measured with timer, which must be stopped and is left stopped; no
// wait when linger is not positive, or once stop is closed), and then
// those already queued, until the batch holds max records or more. size
// gives the records of a request. It returns the batch.
func Gather[T any](batch []T, n int, reqs <-chan T, stop <-chan struct{}, linger time.Duration, timer *time.Timer, size func(T) int, max int) []T {
	if linger > 0 {
		timer.Reset(linger)
	wait:
		for n < max {
			select {
			case r := <-reqs:
				batch = append(batch, r)
				n += size(r)
			case <-timer.C:
				break wait
			case <-stop:
				break wait
			}
		}
		timer.Stop()
	}
	for n < max {
		select {
		case r := <-reqs:
			batch = append(batch, r)
			n += size(r)
		default:
			return batch
		}
	}
	return batch
}

package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits gives 2^subBits linear sub-buckets per power of two of microseconds: every
// latency is recorded with a relative error below 1/64 (1.6%), in a fixed 30 KiB, as HDR
// histograms do, so percentiles need no stored samples however long the run.
const (
	subBits    = 6
	subBuckets = 1 << subBits
	nBuckets   = subBuckets + (64-subBits-1)*subBuckets
)

// Histogram records latencies in microseconds. The zero value is empty and ready.
// It is not safe for concurrent use: each load goroutine keeps its own and Merge joins them.
type Histogram struct {
	counts []uint64
	n      uint64
	max    time.Duration
	sum    time.Duration
}

func bucketOf(us uint64) int {
	if us < subBuckets {
		return int(us)
	}
	shift := bits.Len64(us) - subBits - 1
	return subBuckets + shift*subBuckets + int(us>>uint(shift)) - subBuckets
}

// upperBound is the largest value (microseconds) recorded in bucket i.
func upperBound(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	shift := (i - subBuckets) / subBuckets
	sub := uint64((i-subBuckets)%subBuckets + subBuckets)
	return (sub+1)<<uint(shift) - 1
}

// Record adds one latency; negative values count as 0.
func (h *Histogram) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint64, nBuckets)
	}
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d/time.Microsecond))]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

// Merge adds o's records to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, nBuckets)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest latency recorded, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Mean is the average latency; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the latency at or below which a fraction q of the records fall (q in
// [0, 1]), as its bucket's upper bound: never below the true value, at most 1.6% above it,
// and never above Max. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(time.Duration(upperBound(i))*time.Microsecond, h.max)
		}
	}
	return h.max
}

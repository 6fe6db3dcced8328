/**
 * Histogram buckets in seconds. Block I/O spans 100 µs (page cache) to seconds (a saturated disk);
 * CSI calls span a millisecond (Probe) to a minute (mkfs of a large volume at NodeStage).
 */
export const IO_SECONDS_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
];

export const CALL_SECONDS_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

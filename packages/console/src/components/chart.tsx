// A time chart (uPlot): x is seconds since the epoch, one line per series. uPlot draws on a
// canvas and is redrawn with setData, so a chart sampled every second costs next to nothing.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface ChartLine {
  label: string;
  values: readonly (number | null)[];
}

export interface TimeChartProps {
  title: string;
  /** Seconds since the epoch, one per sample. */
  times: readonly number[];
  lines: readonly ChartLine[];
  /** Unit of the y axis, for its label. */
  unit: string;
}

const palette = ["#e4572e", "#2e86ab", "#7a9e0f", "#a23b72", "#f18f01", "#5c4d7d", "#3b8ea5", "#c73e1d"];
const widthPx = 720;
const heightPx = 240;

export function TimeChart({ title, times, lines, unit }: TimeChartProps) {
  const container = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | undefined>(undefined);
  const shape = lines.map((line) => line.label).join("\u0000");

  // A new set of lines is a new chart; new samples only new data.
  useEffect(() => {
    if (container.current === null) return;
    plot.current = new uPlot(
      {
        title,
        width: widthPx,
        height: heightPx,
        scales: { x: { time: true } },
        axes: [{}, { label: unit }],
        series: [
          {},
          ...lines.map((line, index) => ({
            label: line.label,
            stroke: palette[index % palette.length],
            width: 2,
          })),
        ],
      },
      data(times, lines),
      container.current,
    );
    return () => {
      plot.current?.destroy();
      plot.current = undefined;
    };
  }, [shape, title, unit]);

  useEffect(() => {
    plot.current?.setData(data(times, lines));
  }, [times, lines]);

  return <div class="chart" ref={container} />;
}

function data(times: readonly number[], lines: readonly ChartLine[]): uPlot.AlignedData {
  return [Array.from(times), ...lines.map((line) => Array.from(line.values))];
}

/* The core clock, measured: a chain of dependent integer adds retires one add per
   cycle, so adds per second of the thread's own CPU time is cycles per second, even
   where other processes share the core. gcc -O1 bench/clock.c -o /tmp/clock && /tmp/clock */
#include <stdio.h>
#include <time.h>
int main(){ struct timespec a,b; long n=2000000000L; long x=0;
clock_gettime(CLOCK_THREAD_CPUTIME_ID,&a);
for(long i=0;i<n;i++){ __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x)); }
clock_gettime(CLOCK_THREAD_CPUTIME_ID,&b);
double s=(b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)/1e9; printf("%.2f GHz (x=%ld)\n", 4.0*n/s/1e9, x); }
